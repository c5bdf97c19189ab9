"""live-client: build apps on live rooms.

``RoomClient`` is a room's WebSocket that stays up (reconnect, resume, exactly-once buying);
``HostClient`` is the host HTTP API. Errors are typed by the server's codes (``live_client.errors``),
events by their types (``live_client.events``).
"""

from live_client import errors, events, models
from live_client.errors import *  # noqa: F403
from live_client.errors import ERRORS, LiveError, error_from
from live_client.events import *  # noqa: F403
from live_client.events import EVENT_TYPES, Event, parse_event
from live_client.host import HostClient
from live_client.models import *  # noqa: F403
from live_client.room import SUBPROTOCOLS, Framing, RoomClient, Stats, room_url

__version__ = "0.1.0"

__all__ = [
    "ERRORS",
    "EVENT_TYPES",
    "SUBPROTOCOLS",
    "Event",
    "Framing",
    "HostClient",
    "LiveError",
    "RoomClient",
    "Stats",
    "error_from",
    "errors",
    "events",
    "models",
    "parse_event",
    "room_url",
]
__all__ += [n for n in dir(errors) if isinstance(getattr(errors, n), type) and issubclass(getattr(errors, n), LiveError)]
__all__ += [n for n in dir(events) if isinstance(getattr(events, n), type) and issubclass(getattr(events, n), Event)]
__all__ += [n for n in dir(models) if isinstance(getattr(models, n), type) and issubclass(getattr(models, n), models.Model)]
