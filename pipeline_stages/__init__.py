"""The stages of pipeline.py (the main job), one module per part; run `python pipeline.py`."""
