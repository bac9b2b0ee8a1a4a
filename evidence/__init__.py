"""Research scripts measuring sciml-bench itself (see README.md); a package so that ``--plugin
evidence.detect_plugin`` imports from the repository root."""
