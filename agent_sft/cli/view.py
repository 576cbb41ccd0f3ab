"""`agent-sft view DIR`: write a static viewer of a dataset folder (or of a pushed repo) and say how to open it.

    agent-sft view runs/alfworld-expert                  # writes runs/alfworld-expert-viewer/, open its index.html
    agent-sft view runs/alfworld-expert --serve          # and serves it on http://127.0.0.1:<port>/
    agent-sft view user/alfworld-expert --out viewer/    # a repo on the Hub, downloaded first
"""

from __future__ import annotations

import argparse
import os
import sys

from agent_sft.cli import CLIError


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("folder", metavar="DIR", help="dataset folder, or a Hub dataset repo `namespace/name`")
    parser.add_argument("--out", metavar="OUT", help="viewer folder to write (default: DIR-viewer beside DIR; for a "
                        "repo, ./<name>-viewer); a viewer written there before is replaced")
    parser.add_argument("--chunk", type=int, default=200, metavar="N", help="episodes per data file the page loads "
                        "when one of them is opened (default 200)")
    parser.add_argument("--revision", metavar="REV", help="with a repo id: the branch, tag or commit to view")
    parser.add_argument("--serve", action="store_true", help="serve the viewer on 127.0.0.1 until Ctrl-C")
    parser.add_argument("--port", type=int, default=0, metavar="P", help="with --serve: the port (default 0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="with --serve: the loopback address to bind (127.0.0.1, "
                        "::1 or localhost; the pages show the whole dataset, so never another interface)")


def run(args: argparse.Namespace) -> int:
    from agent_sft.viewer import fetch, serve
    from agent_sft.viewer.build import default_out, write_viewer

    serve.check_port(args.port)
    source = args.folder
    remote = fetch.looks_like_repo(source)
    if args.revision and not remote:
        raise CLIError("--revision is for a Hub repo id, not a local folder")
    out = os.path.abspath(args.out or (source.split("/")[1] + "-viewer" if remote else default_out(source)))
    # The port is taken before anything is downloaded or written: a busy one is said at once.
    server = serve.make_server(out, args.host, args.port) if args.serve else None
    try:
        if remote:
            print(f"Downloading {source} from the Hub ...", flush=True)
            folder = fetch.download(source, args.revision)
        else:
            folder = source
        built = write_viewer(folder, out, chunk=args.chunk, source=source)
        page = os.path.join(built.out, "index.html")
        print(f"Wrote the viewer of {source}: {built.episodes} episodes in {built.chunks} chunks, "
              f"{built.bytes / 1e6:.1f} MB, at {built.out}")
        if server is None:
            print(f"Open it: file://{page}  (or serve it: agent-sft view {source} --serve)")
            return 0
        print(f"Serving it at {serve.url_of(server)}  (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("Stopped serving.", file=sys.stderr)
        return 0
    finally:
        if server is not None:
            server.server_close()
