import pytest

from taskhub_common.bus import topic_matches


@pytest.mark.parametrize(
    ("binding", "key", "expected"),
    [
        ("task.created", "task.created", True),
        ("task.created", "task.updated", False),
        ("task.*", "task.created", True),
        ("task.*", "task", False),
        ("task.*", "task.created.extra", False),
        ("task.#", "task", True),
        ("task.#", "task.created.extra", True),
        ("#", "anything.at.all", True),
        ("*.deleted", "comment.deleted", True),
        ("*.deleted", "comment.updated", False),
        ("#.deleted", "a.b.deleted", True),
    ],
)
def test_topic_matching_follows_amqp(binding: str, key: str, expected: bool) -> None:
    assert topic_matches(binding, key) is expected
