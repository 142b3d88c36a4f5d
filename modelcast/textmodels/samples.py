"""Fixed sentences: the similarity query of the demo and the checks of ``modelcast quantize``.

Each query has one related sentence (the same meaning in other words) and unrelated ones; a
working sentence-embedding model scores the related one highest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimilarityCase:
    query: str
    related: str
    unrelated: tuple[str, ...]


CASES = (
    SimilarityCase(
        "A man is playing a guitar.",
        "Someone is strumming an acoustic guitar on stage.",
        ("The stock market fell sharply today.", "A cat sleeps on the warm windowsill."),
    ),
    SimilarityCase(
        "How do I reset my password?",
        "I forgot my login credentials and need to change them.",
        ("The recipe calls for two cups of flour.", "Heavy rain is expected this weekend."),
    ),
    SimilarityCase(
        "The train to Berlin was delayed by an hour.",
        "Our rail journey to Germany's capital ran sixty minutes late.",
        ("She painted the kitchen walls yellow.", "Photosynthesis converts light into energy."),
    ),
    SimilarityCase(
        "Edge devices run the model locally.",
        "The model is executed on the device itself, not in the cloud.",
        ("He scored two goals in the final.", "Bake the bread for forty minutes."),
    ),
)

#: Every distinct sentence above, in a stable order (the fp32/int8 comparison set).
SENTENCES: tuple[str, ...] = tuple(
    dict.fromkeys(s for c in CASES for s in (c.query, c.related, *c.unrelated))
)
