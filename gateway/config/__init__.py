"""Configuration: YAML files -> pydantic models, with every error located by file and line."""
