"""Cases: the messages of one order (channel, order_id) as one thread, with its two 48-hour clocks, sticky
Tier-1 escalation, the agents' audit trail, vetted replies and repeat-buyer history.

`policy` is pure (the clocks and the routing rule), `store` keeps cases in the prediction log's database,
`replies` is the vetted reply catalogue, `buyers` hashes buyer ids, `schemas` and `routes` are the API,
`export` writes a case as a record a seller attaches to a claim response.
"""
