"""twinbench reports: re-render saved result rows without rerunning anything.

`python -m reports render|compare|gate ...` (see `reports/__main__.py`). One module per
concern: `load` (rows -> configurations), `stats` (medians and spreads), `tables` (table data
and Markdown), `html`, `plots`, `render` (the report files), `compare` (machines side by side),
`gate` (the regression decision). Nothing here imports torch or TensorFlow.
"""
