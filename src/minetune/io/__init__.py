"""Import and export of minetune data in other tools' formats."""
