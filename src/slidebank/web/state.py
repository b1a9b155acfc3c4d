"""What a running application holds: the repository, open slides and serving options."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from slidebank.config import Settings
from slidebank.services.open_slides import OpenSlides, ServedSlide
from slidebank.services.repository import Repository
from slidebank.services.serving import ServingOptions


@dataclass
class AppState:
    settings: Settings
    repository: Repository
    slides: OpenSlides
    options: ServingOptions

    async def acquire(self, public_id: str) -> ServedSlide:
        """The open slide, without leaving the event loop when it is already open."""
        slide = self.slides.cached(public_id)
        if slide is None:
            slide = await run_in_threadpool(self.slides.acquire, public_id)
        return slide

    def close(self) -> None:
        self.slides.close()
        self.repository.close()


def app_state(request: Request) -> AppState:
    """The application's state (a FastAPI dependency)."""
    state: AppState = request.app.state.slidebank
    return state
