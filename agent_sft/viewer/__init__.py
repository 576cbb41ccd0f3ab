"""`agent-sft view`: a dataset folder as a static, self-contained web page.

`build` writes the viewer folder (the page's assets, an episode index and the episodes in paged chunks), streaming
the folder shard by shard; `episodes` turns rows into what the page reads (pure); `fetch` downloads a pushed repo
first; `serve` serves the viewer folder on 127.0.0.1.
"""
