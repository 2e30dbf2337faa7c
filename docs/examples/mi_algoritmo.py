"""Mi propio algoritmo de balanceo / My own load-balancing algorithm.

"El menos cargado de dos al azar" (power of two choices): elige dos servidores al azar y
manda la solicitud al que tiene menos solicitudes en curso por unidad de peso. Casi tan bueno
como least_connections, pero mira solo dos servidores, y si muchos balanceadores eligen a la
vez no se amontonan todos sobre el mismo servidor "menos cargado".

"The least loaded of two random choices" (power of two choices): pick two servers at random
and send the request to the one with fewer requests in flight per unit of weight. Almost as
good as least_connections, but it looks at two servers only, and when many balancers choose
at once they do not all pile onto the same "least loaded" server.

Pruébalo / Try it (docs/algorithm-plugin.md):

    ticslab up --algorithm docs/examples/mi_algoritmo.py:MiAlgoritmo
"""

import random
import time


class MiAlgoritmo:
    # El nombre que muestran /status y el panel (sin él: el nombre de la clase). No puede
    # ser el de un algoritmo incluido (random, round_robin, ...).
    # The name /status and the dashboard show (without it: the class's name). It cannot be
    # a built-in's (random, round_robin, ...).
    name = "dos_al_azar"

    def __init__(self):
        # Se crea una instancia nueva cada vez que se elige este algoritmo: lo que guardes
        # en self dura mientras siga elegido. / A fresh instance each time this algorithm
        # is chosen: what you keep on self lasts while it stays chosen.
        self.azar = random.Random()

    def pick(self, servers, client):
        """Devuelve UNO de ``servers`` / Return ONE of ``servers``.

        servers: los servidores que pueden atender esta solicitud (nunca vacío, en el orden
            configurado). Lee solo name, url, in_flight, weight, effective_weight(ahora) y
            latency_cost(ahora), con ahora = time.monotonic(); son copias de solo lectura.
            / the servers that may take this request (never empty, in configured order).
            Read only name, url, in_flight, weight, effective_weight(now) and
            latency_cost(now), with now = time.monotonic(); they are read-only copies.
        client: la dirección IP del cliente / the client's IP address.
        """
        if len(servers) == 1:
            return servers[0]
        a, b = self.azar.sample(servers, 2)
        ahora = time.monotonic()

        def carga(server):
            # En curso, contando esta, por unidad de peso (el peso efectivo nunca es 0 aquí).
            # In flight, counting this one, per unit of weight (never 0 here).
            return (server.in_flight + 1) / server.effective_weight(ahora)

        return a if carga(a) <= carga(b) else b
