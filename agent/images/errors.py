"""The image seam's one error tree.

Every failure of the store, the registry client and the builder is an
`ImageError` whose message is one line naming the image reference (or file
and line) and the problem. `retryable` says whether trying again may help
(a registry that is down) or not (a corrupt blob, a bad manifest).
"""

from __future__ import annotations


class ImageError(Exception):
    """Base of every image error: one line, names the ref and the problem."""

    retryable = False


class NotFound(ImageError):
    """An image, tag, manifest or blob that does not exist (locally or remotely)."""


class RegistryUnavailable(ImageError):
    """The registry cannot be reached or answered with a server error."""

    retryable = True


class CorruptBlob(ImageError):
    """A blob whose content does not match its digest (or size)."""


class BadManifest(ImageError):
    """A manifest, index or config that cannot be parsed or is unsupported."""


class AuthError(ImageError):
    """The registry refused our credentials or its token service failed."""


class ImageInUse(ImageError):
    """An image that a container still uses cannot be removed."""


class BuildError(ImageError):
    """A Gantryfile that does not parse or a step that failed (names file:line)."""
