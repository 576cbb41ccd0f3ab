"""The dataset folder: shards and their layout, rows and filters, the writer, rewrites and maintenance,
reading, the card and the `datasets` builder. Import the module that holds what you need."""
