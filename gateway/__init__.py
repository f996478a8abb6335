"""The application shell around `signed_sender`: configuration, key file, store and the CLI.

Later it also holds the submission proxy and list processing (shared/DESIGN.md, "Pieces").
"""
