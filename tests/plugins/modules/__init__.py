"""Plugin modules named in test configs (`plugins.modules`), one per situation."""
