"""Command line, demo orchestration and the service runner shared by demo and tests."""
