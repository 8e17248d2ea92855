"""Reading run directories into tables and figures (pandas + matplotlib)."""
