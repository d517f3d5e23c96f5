#!/usr/bin/env python3
"""A TLS-terminating TCP proxy for vna's tests: a server speaking HTTPS in front of a plain
HTTP one (Debian's Orthanc 1.10.1 crashes on its own HTTPS connections with OpenSSL 3).

usage: tls_proxy.py LISTEN_PORT TARGET_PORT CERT_PEM KEY_PEM
Accepts TLS on 127.0.0.1:LISTEN_PORT with the certificate chain CERT_PEM and key KEY_PEM and
forwards the decrypted bytes to 127.0.0.1:TARGET_PORT. Prints "ready" once listening.
"""
import asyncio
import ssl
import sys

listen_port, target_port, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_reader, client_writer):
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


async def main():
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, ssl=context)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
