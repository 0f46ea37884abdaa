"""The fake Slack's write methods, driven by slack_sdk itself (its files_upload_v2 is the
current upload flow), and their read-backs in process and over the control API."""
from __future__ import annotations

import base64

import pytest
from slack_sdk.errors import SlackApiError

from rtmbotd.testing.fakeslack import FakeSlackClient
from tests.test_fake_slack import fake, web  # noqa: F401  (fixtures; importing it also clears proxies)


def error_of(call) -> str:
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value.response["error"]


def test_reactions_are_recorded_and_refused_twice(fake, web) -> None:
    web.reactions_add(channel="C1GENERAL", timestamp="1.2", name="eyes")
    assert error_of(lambda: web.reactions_add(channel="C1GENERAL", timestamp="1.2", name="eyes")) == "already_reacted"
    web.reactions_remove(channel="#general", timestamp="1.2", name="eyes")
    assert error_of(lambda: web.reactions_remove(channel="C1GENERAL", timestamp="1.2", name="eyes")) == "no_reaction"
    assert error_of(lambda: web.reactions_add(channel="C9NOPE", timestamp="1.2", name="eyes")) == "channel_not_found"
    assert [(c["method"], c["channel"], c["name"]) for c in fake.api_calls()] == [
        ("reactions.add", "C1GENERAL", "eyes"), ("reactions.remove", "#general", "eyes")]
    assert len(fake.web_calls("reactions.add")) == 3            # refused ones too


def test_ephemeral_and_scheduled_messages(fake, web) -> None:
    assert web.chat_postEphemeral(channel="C1GENERAL", user="U1ALICE", text="psst")["message_ts"]
    assert error_of(lambda: web.chat_postEphemeral(channel="C1GENERAL", user="U9NOBODY", text="x")) == \
        "user_not_in_channel"
    answer = web.chat_scheduleMessage(channel="C1GENERAL", post_at=1900000000, text="later")
    assert answer["post_at"] == 1900000000 and answer["scheduled_message_id"]
    assert error_of(lambda: web.chat_scheduleMessage(channel="C1GENERAL", post_at="soon", text="x")) == "invalid_time"
    assert [c["method"] for c in fake.api_calls()] == ["chat.postEphemeral", "chat.scheduleMessage"]
    assert fake.sent_messages() == []       # neither is a message in the channel


def test_slack_sdks_files_upload_v2_completes_on_the_fake(fake, web) -> None:
    data = bytes(range(256)) * 10
    answer = web.files_upload_v2(channel="C1GENERAL", filename="b.bin", content=data, title="Bytes",
                                 initial_comment="here", thread_ts="1.2")
    assert answer["ok"]
    (uploaded,) = fake.uploaded_files()
    assert base64.b64decode(uploaded["content_base64"]) == data
    assert (uploaded["filename"], uploaded["title"], uploaded["channel"], uploaded["initial_comment"],
            uploaded["thread_ts"], uploaded["size"]) == ("b.bin", "Bytes", "C1GENERAL", "here", "1.2", len(data))
    assert [c["method"] for c in fake.api_calls()] == ["files.getUploadURLExternal", "files.completeUploadExternal"]


def test_completing_an_upload_needs_the_bytes_first(fake, web) -> None:
    ticket = web.files_getUploadURLExternal(filename="a.txt", length=3)
    files = [{"id": ticket["file_id"]}]
    assert error_of(lambda: web.files_completeUploadExternal(files=files)) == "file_not_found"
    assert fake.uploaded_files() == []


def test_the_enforced_rate_limit_and_429_injection_cover_the_writes(fake, web) -> None:
    fake.enforce_rate_limit(1.0, burst=1)
    web.reactions_add(channel="C1GENERAL", timestamp="1.2", name="a")
    assert error_of(lambda: web.chat_update(channel="C1GENERAL", ts="1.2", text="x")) == "ratelimited"
    assert fake.rate_limit_violations() == 1
    fake.enforce_rate_limit(None)
    fake.fail_next("reactions.add", status=429, retry_after=3)
    with pytest.raises(SlackApiError) as caught:
        web.reactions_add(channel="C1GENERAL", timestamp="1.2", name="b")
    assert caught.value.response.status_code == 429 and caught.value.response.headers["Retry-After"] == "3"


def test_api_calls_and_uploaded_files_over_the_control_api(fake, web) -> None:
    web.reactions_add(channel="C1GENERAL", timestamp="1.2", name="eyes")
    web.files_upload_v2(channel="C1GENERAL", filename="t.txt", content="text")
    client = FakeSlackClient(fake.url)
    assert client.api_calls("reactions.add") == [{"method": "reactions.add", "channel": "C1GENERAL",
                                                  "timestamp": "1.2", "name": "eyes"}]
    assert base64.b64decode(client.uploaded_files()[0]["content_base64"]) == b"text"
