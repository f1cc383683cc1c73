"""Built-in sinks. Each registers through the ``sluice.sinks`` entry point group."""
