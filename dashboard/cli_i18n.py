"""What ``ticslab dashboard`` and ``ticslab demo --web`` print before the dashboard opens (a
refused flag, an address that cannot be served, the ``--web`` banner), in English and
Spanish. The dashboard's own screens are worded in ``dashboard/i18n.py``."""

from __future__ import annotations

from services.lang import Catalogue

TEXT: Catalogue = {
    "en": {
        "web_flags": "--host, --port and --allow-remote-control go with --web",
        "could_not_serve": "could not serve the dashboard: {error}",
        "web_header": "ticslab dashboard: {url} in a browser",
        "stop_hint": "Ctrl+C stops it.",
        "no_windows": "--web runs on Linux and macOS (on Windows, use WSL)",
        "wildcard": "{flag} {host} listens on every address, but the page must name one for "
        "the browser to connect back to: give this machine's address on the network, e.g. "
        "{flag} 192.168.1.20 (ip address, ifconfig or ipconfig show it)",
        "bad_host": "{flag} {host}: {error}",
        "cannot_listen": "cannot listen on {host}:{port}: {error}",
        "arg_port": "a port is 1 to 65535, not {text!r}",
        "arg_not_seconds": "not a number of seconds: {text!r}",
        "arg_refresh": "refresh must be between {low} and {high} seconds, got {value}",
        "bad_ca": "--ca {path}: not a readable PEM CA file ({error})",
    },
    "es": {
        "web_flags": "--host, --port y --allow-remote-control van con --web",
        "could_not_serve": "no se pudo servir el panel: {error}",
        "web_header": "ticslab dashboard: {url} en un navegador",
        "stop_hint": "Ctrl+C lo detiene.",
        "no_windows": "--web funciona en Linux y macOS (en Windows, usa WSL)",
        "wildcard": "{flag} {host} escucha en todas las direcciones, pero la página debe "
        "nombrar una para que el navegador se conecte de vuelta: da la dirección de este "
        "computador en la red, p. ej. {flag} 192.168.1.20 (ip address, ifconfig o ipconfig la "
        "muestran)",
        "bad_host": "{flag} {host}: {error}",
        "cannot_listen": "no se puede escuchar en {host}:{port}: {error}",
        "arg_port": "un puerto va de 1 a 65535, no {text!r}",
        "arg_not_seconds": "no es un número de segundos: {text!r}",
        "arg_refresh": "refresh debe estar entre {low} y {high} segundos, no {value}",
        "bad_ca": "--ca {path}: no es un archivo PEM de CA que se pueda leer ({error})",
    },
}
