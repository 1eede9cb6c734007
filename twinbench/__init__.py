"""twinbench: the engine behind the suites (data, framework adapters, recipes, results).

Nothing here imports torch or TensorFlow at module level: `twinbench.imports` is the one
place that does, in the only order that does not crash the process.
"""
