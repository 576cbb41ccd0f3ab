"""Getting a folder out: the Hub upload (`hub`) and the verl/JSONL exports (`exports`)."""
