"""`/tensorboard/...` forwarded to the loopback TensorBoard child, so one port (and one token) serves both.

The token check happens in the app's middleware like for `/api/`; the browser's own TensorBoard requests carry it
as a cookie scoped to `/tensorboard` (set when the page is first opened with `?token=`).
"""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from .tensorboard import PREFIX

router = APIRouter()
TOKEN_COOKIE = "furnace_token"
# Hop-by-hop headers and our own credentials stay on this side of the proxy.
_REQUEST_DROP = {"host", "connection", "keep-alive", "te", "trailers", "transfer-encoding", "upgrade",
                 "proxy-authorization", "authorization", "cookie", "content-length", "x-furnace-token"}
_RESPONSE_DROP = {"connection", "keep-alive", "te", "trailers", "transfer-encoding", "upgrade"}


def proxy_client() -> httpx.AsyncClient:
    """The client the app keeps for its lifetime; TensorBoard's data requests can be slow on a busy machine."""
    return httpx.AsyncClient(timeout=httpx.Timeout(120, connect=5))


@router.get(PREFIX, include_in_schema=False)
async def board_root(request: Request) -> Response:
    """TensorBoard's pages load their files relative to `/tensorboard/`."""
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{PREFIX}/{query}")


@router.api_route(PREFIX + "/{path:path}", methods=["GET", "POST"], include_in_schema=False)
async def board(path: str, request: Request) -> Response:
    """Forward one request as is (minus the token) and stream the answer back with its status and headers."""
    upstream = request.app.state.tensorboard.upstream
    if upstream is None:
        return JSONResponse({"detail": "TensorBoard is not running (start the server with --tensorboard-port)"},
                            status_code=503)
    client: httpx.AsyncClient = request.app.state.tensorboard_client
    query = [(key, value) for key, value in request.query_params.multi_items() if key != "token"]
    headers = {key: value for key, value in request.headers.items() if key.lower() not in _REQUEST_DROP}
    outgoing = client.build_request(request.method, f"{upstream}{PREFIX}/{path}", params=query, headers=headers,
                                    content=await request.body())
    try:
        answer = await client.send(outgoing, stream=True)
    except httpx.HTTPError as error:
        return JSONResponse({"detail": f"TensorBoard did not answer: {error}"}, status_code=502)
    kept = {key: value for key, value in answer.headers.items() if key.lower() not in _RESPONSE_DROP}
    return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, headers=kept,
                             background=BackgroundTask(answer.aclose))
