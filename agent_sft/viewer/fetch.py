"""A pushed dataset repo downloaded for the viewer: the card, meta/ and the `raw`, `sft` and `scores` configs.

`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` and the cache are honored as huggingface_hub honors them.
"""

from __future__ import annotations

import os
import re

from agent_sft.errors import ConfigError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# What the page shows; `dpo`, named builds, judge verdicts and anything else in the repo are not downloaded.
PATTERNS = ["README.md", "meta/info.json", "data/raw/*", "data/sft/*", "data/scores/*"]


def looks_like_repo(source: str) -> bool:
    """Whether `source`, not being a local path, reads as a Hub repo id `namespace/name`."""
    return not os.path.exists(source) and bool(REPO_ID.match(source))


def download(repo_id: str, revision: str | None = None) -> str:
    """The local folder (in the Hub cache) holding `repo_id` at `revision`.

    Raises:
        ConfigError: the repo cannot be found or read, or is not in the cache while offline; one line saying so.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=PATTERNS)
    except GatedRepoError:
        raise ConfigError(f"{repo_id}: a gated dataset; accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{repo_id}: no such folder here, and no such dataset repo on the Hub or no access to it "
                          "(set HF_TOKEN for a private one)") from None
    except RevisionNotFoundError:
        raise ConfigError(f"{repo_id}: no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise ConfigError(f"{repo_id}: no such folder here, and as a Hub repo it is not in the cache while the Hub cannot be reached (HF_HUB_OFFLINE is "
                          f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}); download it online first") from None
    except (HfHubHTTPError, OSError) as e:
        raise ConfigError(f"{repo_id}: cannot download it: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
