"""What ``ticslab passwd`` prints, in English and Spanish (services/lang.py chooses)."""

from __future__ import annotations

from services.lang import Catalogue

TEXT: Catalogue = {
    "en": {
        "help_file": "the htpasswd file (created if missing, written 0600)",
        "help_user": "the user to add or change",
        "help_cost": "bcrypt cost, {low} to {high} (default {default}: ~50 ms a check)",
        "prompt": "Password for {user}: ",
        "prompt_again": "Again: ",
        "added": "{user} added to {file}",
        "changed": "{user}'s password changed in {file}",
        "bad_user": "{user!r} cannot be a user: a user name is 1 to 64 letters, digits or "
        ". _ @ -, starting with a letter or digit",
        "no_password": "no password given (on stdin: one line)",
        "too_long": "the password has {length} bytes; bcrypt reads at most {maximum}",
        "mismatch": "the two passwords differ; nothing written",
        "bad_file": "{file}: {problem}; nothing written",
        "not_written": "{file} could not be written: {problem}",
    },
    "es": {
        "help_file": "el archivo htpasswd (se crea si no existe, con permisos 0600)",
        "help_user": "el usuario que agregas o cambias",
        "help_cost": "costo de bcrypt, de {low} a {high} (por omisión {default}: ~50 ms por "
        "revisión)",
        "prompt": "Contraseña de {user}: ",
        "prompt_again": "Otra vez: ",
        "added": "{user} agregado a {file}",
        "changed": "contraseña de {user} cambiada en {file}",
        "bad_user": "{user!r} no puede ser un usuario: un nombre de usuario tiene de 1 a 64 "
        "letras, dígitos o . _ @ -, y empieza con una letra o un dígito",
        "no_password": "no diste una contraseña (por stdin: una línea)",
        "too_long": "la contraseña tiene {length} bytes; bcrypt lee a lo más {maximum}",
        "mismatch": "las dos contraseñas no coinciden; no se escribió nada",
        "bad_file": "{file}: {problem}; no se escribió nada",
        "not_written": "no se pudo escribir {file}: {problem}",
    },
}
