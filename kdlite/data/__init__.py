"""The data path: raw rows -> Example -> rendered tokens with section ids -> crop + labels -> packed batches."""
