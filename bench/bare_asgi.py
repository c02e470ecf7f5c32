"""The ceiling: a bare ASGI app returning a fixed JSON body (no framework, no model)."""

BODY = b'{"churn_probability": 0.5}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(START)
    await send({"type": "http.response.body", "body": BODY})
