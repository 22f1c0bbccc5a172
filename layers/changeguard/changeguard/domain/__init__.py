"""Pure decisions. Nothing here imports boto3, performs I/O or reads the clock."""
