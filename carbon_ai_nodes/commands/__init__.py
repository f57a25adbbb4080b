"""Subcommands of ``carbon-ai``: one module each, registered in ``carbon_ai_nodes.cli.SUBCOMMANDS``."""
