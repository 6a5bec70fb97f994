"""What crosses the boundary between the acceptors and the API process: the
shared-memory rings and their slot words, the records and frames, the spool
files of large bodies."""
