"""Typer commands: thin shells over the source->target functions of each stage."""
