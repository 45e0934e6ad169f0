package milter

import "github.com/spf-milter/spf-milter/milter/internal/wire"

// parseClientAddr reads {client_addr} as the wire layer reads the connect
// data's address, so that both take the same forms (wire.ParseClientAddr).
var parseClientAddr = wire.ParseClientAddr
