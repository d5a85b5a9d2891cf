"""Calculator tests run single-threaded: many tiny kernels oversubscribe a shared CPU otherwise."""

from __future__ import annotations


