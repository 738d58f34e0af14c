"""The data gate (Great Expectations 1.x): an edge over the prepared dataset."""
