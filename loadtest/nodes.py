"""Several nodes (``--url A --url B --url C``): which node each connection goes to.

The assignment is a pure function of the plan and the number of nodes, so the coordinator can
report what each node was given before any worker has said a word, and every worker deals its
own share out the same way. Connections are numbered in the plan's order: the audience
``v0, v1, ...``, then the buyers ``b0, b1, ...``, then the group-buy members ``t0m0, t0m1, ...,
t1m0, ...``, then the tools' users (the draw's entrants ``d0, ...``, the bidders ``a0, ...``, the
voters ``p0, ...``, the Q&A users ``q0, ...``); connection ``i`` goes to node ``i mod N``.
So every kind of user (observers, commenters, likers, buyers, the members of one team) is
spread over all the nodes, within one of each other, and the host's console connection goes to
the first node, where the room was set up.
"""

from __future__ import annotations

from typing import Any

from loadtest.plan import Plan

#: Node of the host's connection (the setup's node too).
HOST_NODE = 0


def node_of(index: int, nodes: int) -> int:
    """The node of connection ``index`` (the plan's order) out of ``nodes``."""
    return index % nodes


def viewer_index(i: int) -> int:
    return i


def buyer_index(plan: Plan, i: int) -> int:
    return plan.audience + i


def member_index(plan: Plan, team: int, member: int) -> int:
    return plan.audience + plan.buyer_count + team * plan.team_size + member


def tool_index(plan: Plan, i: int) -> int:
    """Connection of the ``i``-th tool user (entrants, bidders, voters, Q&A users in that order)."""
    return plan.audience + plan.buyer_count + plan.team_members + i


def assignment(plan: Plan, urls: list[str]) -> list[dict[str, Any]]:
    """Per node, what the plan gives it: ``url``, ``connections`` (the host's included),
    ``viewers``, ``buyers``, ``team_members``, ``tool_users`` and ``host`` (bool)."""
    n = len(urls)
    out: list[dict[str, Any]] = [
        {
            "url": url,
            "connections": 0,
            "viewers": 0,
            "buyers": 0,
            "team_members": 0,
            "tool_users": 0,
            "host": False,
        }
        for url in urls
    ]
    parts = (
        ("viewers", 0, plan.audience),
        ("buyers", plan.audience, plan.buyer_count),
        ("team_members", plan.audience + plan.buyer_count, plan.team_members),
        ("tool_users", plan.audience + plan.buyer_count + plan.team_members, plan.tool_users),
    )
    for kind, first, count in parts:
        for node in range(n):
            # How many of first..first+count-1 are congruent to node mod n.
            share = len(range((node - first) % n, count, n))
            out[node][kind] += share
            out[node]["connections"] += share
    if plan.wants("host"):
        out[HOST_NODE]["host"] = True
        out[HOST_NODE]["connections"] += 1
    return out
