"""The data pipeline: corpus sources and splits, tokenizers, indexed token files, blocks and samplers.

`Code/data_download.py` drives it to write `Code/data/<name>/`; training and evaluation read the files
back through `lm_datasets` and `distributed_indexed`. Nothing here knows a model.
"""
