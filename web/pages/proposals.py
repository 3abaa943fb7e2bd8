"""Proposals: each placement awaiting approval, its changes against the placement in force, its $/hour
change and why it was made; fleet operators approve or reject it here.

Approve and Reject run the REST API's own routes (controlplane.api.placements), so the rules of
who may decide what, and what a decision does, are written once: approval moves the proposal to
`applying` and the reconciler actuates it at its next cycle. A tenant-scoped user sees only its
own workloads' lines, their cost and a fixed reason, and no buttons (as the API's placement view)."""

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from controlplane.api.common import Id, IdFilter
from controlplane.api.placements import approve_placement, placement_public, reject_placement
from controlplane.auth import Principal
from controlplane.models.placements import PlacementPublic
from controlplane.queries import (
    MigrationLine,
    migrations_of,
    newest_placement,
    open_proposals,
    placement_in_force,
    placement_of_version,
    priced_items,
    recently_decided,
)
from web.changes import PlacementChanges, changes
from web.deps import Console, CsrfChecked, SignedIn, User, operator, render

RECENT_DECISIONS = 10


@dataclass(frozen=True)
class ProposalView:
    proposal: PlacementPublic
    in_force: PlacementPublic | None
    changes: PlacementChanges
    moves: tuple[MigrationLine, ...]
    decidable: bool  # the newest placement: the only one the API lets anyone decide

    @property
    def usd_per_hour_delta(self) -> float:
        before = self.in_force.usd_per_hour if self.in_force is not None else 0.0
        return self.proposal.usd_per_hour - before


def proposal_views(session: Session, principal: Principal) -> list[ProposalView]:
    """Every open proposal as `principal` may see it, newest first."""
    tenant_id = principal.tenant_id
    current = placement_in_force(session)
    before = priced_items(session, current.id, tenant_id) if current is not None else []
    in_force = placement_public(session, principal, current, with_items=False) if current is not None else None
    newest = newest_placement(session)
    return [
        ProposalView(
            proposal=placement_public(session, principal, p, with_items=False),
            in_force=in_force,
            changes=changes(before, priced_items(session, p.id, tenant_id)),
            moves=tuple(migrations_of(session, p.id, tenant_id)),
            decidable=newest is not None and newest.version == p.version,
        )
        for p in open_proposals(session)
    ]


def routes(console: Console) -> APIRouter:
    router = console.router()

    @router.get("/proposals")
    def proposals_page(request: Request, user: SignedIn, decided: IdFilter = None) -> Response:
        with console.session() as session:
            views = proposal_views(session, user.principal)
            recent = [placement_public(session, user.principal, p, with_items=False)
                      for p in recently_decided(session, RECENT_DECISIONS)]
            just = _decided(session, user, decided)
        return render(request, "proposals.html", {
            "user": user, "active": "Proposals", "proposals": views, "recent": recent, "just_decided": just,
        })

    def decide(user: User, version: int, approve: bool) -> Response:
        operator(user)
        with console.session() as session:
            # The API's routes themselves: the same checks (fleet-wide operator, the open proposal) and audit.
            (approve_placement if approve else reject_placement)(version, session, user.principal)
        return RedirectResponse(f"/ui/proposals?decided={version}", status_code=303)

    @router.post("/proposals/{version}/approve", dependencies=[CsrfChecked])
    def approve(version: Id, user: SignedIn) -> Response:
        return decide(user, version, approve=True)

    @router.post("/proposals/{version}/reject", dependencies=[CsrfChecked])
    def reject(version: Id, user: SignedIn) -> Response:
        return decide(user, version, approve=False)

    return router


def _decided(session: Session, user: User, version: int | None) -> PlacementPublic | None:
    """The placement just decided (the page's ?decided=), as `user` may see it."""
    placement = placement_of_version(session, version) if version is not None else None
    return placement_public(session, user.principal, placement, with_items=False) if placement is not None else None
