"""Where rooms live. In memory for one node; the interface is what a Redis store implements later.

The hub asks the store for rooms by id and for the room a participant is in; it never keeps its
own index, so a shared (Redis) store can answer for several nodes behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from signaling.room import Room


class RoomStore(ABC):
    """Rooms by id, and the room of each participant."""

    @abstractmethod
    def get(self, room_id: str) -> Room | None: ...

    @abstractmethod
    def add(self, room: Room) -> None: ...

    @abstractmethod
    def discard(self, room_id: str) -> None: ...

    @abstractmethod
    def room_of(self, participant_id: str) -> Room | None: ...

    @abstractmethod
    def bind(self, participant_id: str, room_id: str) -> None: ...

    @abstractmethod
    def unbind(self, participant_id: str) -> None: ...

    @abstractmethod
    def rooms(self) -> Iterator[Room]: ...


class InMemoryRoomStore(RoomStore):
    """The default: one process, plain dicts."""

    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}
        self._membership: dict[str, str] = {}

    def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def add(self, room: Room) -> None:
        if room.room_id in self._rooms:
            raise ValueError(f"room {room.room_id!r} exists already")
        self._rooms[room.room_id] = room

    def discard(self, room_id: str) -> None:
        room = self._rooms.pop(room_id, None)
        if room is not None:
            for pid in room.participants:
                self._membership.pop(pid, None)

    def room_of(self, participant_id: str) -> Room | None:
        room_id = self._membership.get(participant_id)
        return self._rooms.get(room_id) if room_id is not None else None

    def bind(self, participant_id: str, room_id: str) -> None:
        self._membership[participant_id] = room_id

    def unbind(self, participant_id: str) -> None:
        self._membership.pop(participant_id, None)

    def rooms(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))
