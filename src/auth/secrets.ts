/** Client secrets are stored hashed (SPEC §3): argon2id via Bun.password. */
export function isHashed(secret: unknown): boolean {
  return typeof secret === 'string' && /^\$(argon2id|argon2i|argon2d|2a|2b|2y)\$/.test(secret);
}

export async function hashSecret(secret: string): Promise<string> {
  return Bun.password.hash(secret, { algorithm: 'argon2id', memoryCost: 19456, timeCost: 2 });
}

export async function verifySecret(secret: string, hash: string): Promise<boolean> {
  if (!isHashed(hash)) return false;
  try {
    return await Bun.password.verify(secret, hash);
  } catch {
    return false;
  }
}
