"""Query routing between an edge model and a cloud model (Ianvs-style hard-example mining): pure decisions.

Nothing here imports torch, paho, influx or streamlit: the routers, the miner's inference, the
escalation rule and the statistics are functions of plain data, shared by the edge (which routes its
own queries), the center (which chooses the router) and the benchmark job. Training the miner needs
scikit-learn (`routing.training`); using a trained miner needs only numpy.
"""
