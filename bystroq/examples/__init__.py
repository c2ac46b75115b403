"""Job categories: one module per category (see listeners/echo.py for the contract)."""
