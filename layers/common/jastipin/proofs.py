"""Order and transfer proofs: the backend posts a participant's proof, the jastiper (the trip's owner) gets it
on WhatsApp through the ``proof_notify`` queue.

- The owner gets proofs whether or not they joined their own trip (no membership check), with the log's
  participant id derived from their number (``stable_id("p", owner_phone)``, like any person's).
- Inside the owner's 24-hour window the proof goes as an image with a caption naming the participant and the
  order. Outside it a free-form image would fail (131047), so the ``proof_received`` template goes instead:
  a paid utility template whose image header carries the same proof.
- The job id is derived from trip, participant, order and image: the backend retrying the same proof gets
  the same job, and the sender's per-recipient log sends it once.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, field_validator

from jastipin import texts
from jastipin.broadcasts import template_parameter
from jastipin.data import participants
from jastipin.errors import Unprocessable
from jastipin.ids import stable_id
from jastipin.outbound.jobs import ProofJob, Recipient
from jastipin.outbound.queues import JobQueues
from jastipin.safe_text import CleanText
from jastipin.settings import EnqueueSettings
from jastipin.templates import PROOF_TEMPLATE, registry
from jastipin.trips import get_trip

MAX_IMAGE_URL = 2048  # jobs.ProofJob.image_url, jobs.TemplateRef.header_image_url


class ProofRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "participant_id": "p_380f83950b4fde49",
                    "order_ref": "ORD-001",
                    "image_url": "https://example.com/proof.jpg",
                    "caption": "Transfer Rp450.000",
                }
            ]
        },
    )

    participant_id: str = Field(min_length=1, max_length=64, description="the participant the proof is from")
    # a parameter of the proof_received template: Meta's rules for those apply
    order_ref: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(template_parameter)]
    image_url: HttpUrl | None = Field(default=None, description="the proof image, reachable by Meta")
    media_id: str | None = Field(
        default=None, pattern=r"^[0-9]{1,64}$", description="or an uploaded media id"
    )
    caption: CleanText | None = Field(default=None, min_length=1, max_length=500)

    @field_validator("image_url")
    @classmethod
    def _fits_the_job(cls, value: HttpUrl | None) -> HttpUrl | None:
        # The job carries the URL as pydantic writes it (IDNA host, percent-encoded path): that must fit.
        if value is not None and len(str(value)) > MAX_IMAGE_URL:
            raise ValueError(f"URL should have at most {MAX_IMAGE_URL} characters once encoded")
        return value


def submit(trip_id: str, request: ProofRequest, settings: EnqueueSettings, queues: JobQueues) -> ProofJob:
    if (request.image_url is None) == (request.media_id is None):
        raise Unprocessable("give exactly one of image_url or media_id", field="image_url")
    trip = get_trip(trip_id)
    participant = participants.get(trip.trip_id, request.participant_id)
    if participant is None:
        raise Unprocessable(
            f"participant '{request.participant_id}' is not a member of trip '{trip.trip_id}'",
            field="participant_id",
        )
    # A template parameter must not hold new lines or runs of spaces (Meta's error 132018).
    who = " ".join((participant.name or participant.phone or participant.participant_id).split())
    image_url = str(request.image_url) if request.image_url else None
    image = image_url or request.media_id or ""
    job = ProofJob(
        job_id=stable_id("prf", trip.trip_id, participant.participant_id, request.order_ref, image),
        trip_id=trip.trip_id,
        participants=[Recipient(id=stable_id("p", trip.owner_phone), phone=trip.owner_phone)],
        template="proof",
        image_url=image_url,
        media_id=request.media_id,
        caption=texts.proof_caption(who, request.order_ref, request.caption),
        template_ref=registry(settings).ref(
            PROOF_TEMPLATE,
            [who, request.order_ref],
            header_image_url=image_url,
            header_image_id=request.media_id,
        ),
    )
    queues.send(job)
    return job
