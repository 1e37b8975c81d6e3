"""``/api/trials/{trial_id}``: one trial with its learning curve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from api.deps import SessionDep
from api.errors import ERROR_RESPONSES
from api.schemas import CurvePointPublic, ErrorPublic, TrialDetailPublic, TrialPublic
from nero_study.store import repo

router = APIRouter(prefix="/api/trials", tags=["trials"], responses=ERROR_RESPONSES)

#: Trial ids are 32-bit integers in the store (PostgreSQL ``integer``).
MAX_TRIAL_ID = 2**31 - 1


@router.get(
    "/{trial_id}",
    response_model=TrialDetailPublic,
    summary="Read a trial with its learning curve",
    responses={404: {"model": ErrorPublic, "description": "No trial with this id"}},
)
def read_trial(
    trial_id: Annotated[int, Path(ge=1, le=MAX_TRIAL_ID, description="The trial's id")], session: SessionDep
) -> TrialDetailPublic:
    """The trial's settings, outcome and curve (step, epoch, train loss, metric; NaN/inf as null)."""
    found = repo.get_trial_with_curve(session, trial_id=trial_id)
    if found is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Trial {trial_id} not found")
    trial, curve = found
    public = TrialPublic.model_validate(trial)
    return TrialDetailPublic(**public.model_dump(), curve=[CurvePointPublic(**point) for point in curve])
