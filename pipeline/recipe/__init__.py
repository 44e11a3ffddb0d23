"""Recipes: the schema (`schema.py`, models only), error messages (`messages.py`) and loading
(`load.py`: YAML, paths, checks against files and the model). Import from the module you need."""
