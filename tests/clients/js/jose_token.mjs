// Signs a JWT with the npm `jose` library, an implementation independent of PyJWT, for relay's JWT tests.
// argv[2]: JSON {payload, key, alg, kid}; `key` is an HMAC secret (HS*) or a PKCS#8 PEM private key.
// Prints the compact token on stdout.

import { SignJWT, importPKCS8 } from 'jose';

const { payload, key, alg, kid } = JSON.parse(process.argv[2]);
const signingKey = alg.startsWith('HS') ? new TextEncoder().encode(key) : await importPKCS8(key, alg);
const header = kid ? { alg, kid, typ: 'JWT' } : { alg, typ: 'JWT' };
process.stdout.write(await new SignJWT(payload).setProtectedHeader(header).sign(signingKey));
