"""From a loaded configuration to running objects, one module per part of the daemon:
`plant` (devices, their tags, endpoints and links, through the protocol table), `detectors`
(through the rule table), `ticketing`, `uplink` and `services` (the runtime services beside the
pipeline). `gateway.app` calls them in order and runs what they build; it knows no protocol,
rule or ticketing detail itself."""
