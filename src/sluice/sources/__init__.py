"""Built-in sources. Each registers through the ``sluice.sources`` entry point group."""
