"""Dense next-item models: one vector per history scored against every catalog item (SASRec)."""
