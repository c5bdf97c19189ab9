"""A host's and a moderator's commands through RoomClient's typed methods: moderation (mute,
ban, delete, slow mode, clear) and the Q&A queue, against a spawned server; what a viewer's
client sees of each."""

from __future__ import annotations

from typing import TypeVar

import pytest
from conftest import Server, mint, new_room_id, new_user

from live_client import (
    Banned,
    ChatCleared,
    CommentDeleted,
    Event,
    Forbidden,
    HostClient,
    Muted,
    QuestionAnswered,
    QuestionClosed,
    QuestionPinned,
    RoomClient,
    SlowMode,
    SlowModeChanged,
    UserMuted,
)

E = TypeVar("E", bound=Event)


async def _until(room: RoomClient, kind: type[E]) -> E:
    while True:
        event = await room.next_event(15)
        if isinstance(event, kind):
            return event


async def _room(server: Server) -> str:
    host = HostClient(server.url, mint("host1", "host"))
    return (await host.create_room("staff", id=new_room_id())).id


async def test_moderation_commands_reach_the_viewer(server: Server) -> None:
    room_id = await _room(server)
    viewer_id = new_user()
    async with (
        RoomClient(server.ws_url, mint("host1", "host"), room=room_id) as host,
        RoomClient(server.ws_url, mint(viewer_id), room=room_id) as viewer,
    ):
        comment_id = await viewer.comment("first")
        await host.delete_comment(comment_id)
        deleted = await _until(viewer, CommentDeleted)
        assert (deleted.comment_id, deleted.by) == (comment_id, "host1")

        await host.mute(viewer_id, 60)
        assert (await _until(viewer, UserMuted)).user_id == viewer_id
        with pytest.raises(Muted):
            await viewer.comment("muted now")
        await host.unmute(viewer_id)
        await viewer.comment("back")

        await host.slow_mode(30)
        assert (await _until(viewer, SlowModeChanged)).interval_s == 30
        await viewer.comment("one per 30 s")
        with pytest.raises(SlowMode):
            await viewer.comment("too soon")
        await host.slow_mode(0)

        await host.clear_chat()
        assert (await _until(viewer, ChatCleared)).by == "host1"

        await host.ban(viewer_id)
        with pytest.raises(Forbidden):  # the client stops: 4403, not retried
            while True:
                await viewer.next_event(15)
    # banned: a new connection is refused with the typed error, and unban lets them in again
    with pytest.raises(Banned):
        async with RoomClient(server.ws_url, mint(viewer_id), room=room_id):
            pass
    async with RoomClient(server.ws_url, mint("host1", "host"), room=room_id) as host:
        await host.unban(viewer_id)
    async with RoomClient(server.ws_url, mint(viewer_id), room=room_id) as viewer:
        assert viewer.welcome.user.id == viewer_id


async def test_staff_commands_check_their_arguments_before_sending(server: Server) -> None:
    room_id = await _room(server)
    async with RoomClient(server.ws_url, mint("host1", "host"), room=room_id) as host:
        with pytest.raises(TypeError):
            await host.delete_comment("7")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await host.mute(new_user(), 0)
        with pytest.raises(ValueError):
            await host.slow_mode(3601)
        with pytest.raises(ValueError):
            await host.ban("")


async def test_the_question_queue_through_the_staff_methods(server: Server) -> None:
    room_id = await _room(server)
    async with (
        RoomClient(server.ws_url, mint("host1", "host"), room=room_id) as host,
        RoomClient(server.ws_url, mint(new_user()), room=room_id) as viewer,
    ):
        first = await viewer.ask("发货要多久?")
        second = await viewer.ask("有优惠券吗?")
        pinned = await host.pin_question(first.id)
        assert pinned.id == first.id and pinned.pinned
        assert (await _until(viewer, QuestionPinned)).question.id == first.id
        assert not (await host.unpin_question(first.id)).pinned
        answered = await host.answer_question(first.id)
        assert answered.state == "answered"
        assert (await _until(viewer, QuestionAnswered)).question.id == first.id
        assert (await host.dismiss_question(second.id)).state == "dismissed"
        with pytest.raises(QuestionClosed):
            await host.pin_question(second.id)
        with pytest.raises(Forbidden):  # a viewer is not staff
            await viewer.answer_question(second.id)
