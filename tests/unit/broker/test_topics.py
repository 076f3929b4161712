"""Topic tree: building, parsing, filters and ACL patterns."""

import pytest

from broker import topics
from broker.acl import acl_text
from broker.errors import TopicError
from broker.messages import NodeBirth


def test_topic_is_built_under_the_prefix():
    assert topics.NODE_BIRTH.topic(node="pi-01") == "fleet/v1/nodes/pi-01/birth"


def test_parse_inverts_topic():
    spec, params = topics.parse(topics.TASK_RESULT.topic(node="pi-02"))
    assert spec is topics.TASK_RESULT
    assert params == {"node": "pi-02"}
    assert topics.parse(topics.NODE_BIRTH.topic(node="x"))[0].message is NodeBirth


@pytest.mark.parametrize("bad", ["pi/01", "+", "#", "", "a b", "x" * 65])
def test_malformed_parameter_is_refused(bad):
    with pytest.raises(TopicError):
        topics.NODE_BIRTH.topic(node=bad)


def test_missing_parameter_is_refused():
    with pytest.raises(TopicError, match="expected parameters"):
        topics.NODE_BIRTH.topic()


@pytest.mark.parametrize("topic", ["other/v1/nodes/pi-01/birth", "fleet/v1/nodes/pi-01/unknown", "fleet/v1/nodes"])
def test_topics_outside_the_tree_are_refused(topic):
    with pytest.raises(TopicError):
        topics.parse(topic)


def test_filter_wildcards_free_parameters():
    assert topics.INFER_UP.filter(edge="pi-01") == "fleet/v1/infer/pi-01/+/up"
    assert topics.shared(topics.INFER_OPEN.filter()) == "$share/cloud/fleet/v1/infer/open"


def test_acl_lets_nodes_publish_only_under_their_own_id():
    text = acl_text("center", ["cloud-1"], ["pi-01"])
    assert "pattern write fleet/v1/nodes/%u/birth" in text
    assert "pattern read fleet/v1/tasks/%u/dispatch" in text
    # nobody but the center may write dispatches or commands
    dispatch_writes = [line for line in text.splitlines() if line.startswith(("pattern write", "topic write"))
                       and ("dispatch" in line or "/cmd" in line)]
    assert dispatch_writes == []
