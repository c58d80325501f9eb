"""The Python-backend ``model.py`` files ``python -m engines triton`` copies into a Triton model repository."""
