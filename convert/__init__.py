"""The maintainers' converter: RegHead releases to parquet in the Hub's layout, a dataset card, a push.

Run it as `python convert/push.py`; this folder is not installed as a package.
"""
