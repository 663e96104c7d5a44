"""A plug-in module that cannot be imported: merlin_kit must warn about it, not crash."""

raise ImportError("merlin_test_plugin.broken is broken on purpose (test)")
