#!/usr/bin/env python3
"""Writes a synthetic patient CSV for `clinicd import patients` (no real person's data).

Usage: scripts/gen-patients-csv.py ROWS > patients.csv"""
import random
import sys

GIVEN = ["Ada", "Alan", "Grace", "Zoë", "José", "Mary-Jane", "Nguyễn", "Chidi", "Aiko", "Omar", "Ingrid", "Lars"]
FAMILY = ["Smith", "Núñez", "O'Brien", "Okafor", "Yamada", "Haddad", "Lindqvist", "García", "Kowalski", "Chen"]
HEADER = (
    "source_id,given_name,family_name,date_of_birth,sex,ssn,phone,email,address_line1,address_line2,"
    "address_city,address_region,address_postal_code,address_country,insurance_primary_payer,"
    "insurance_primary_member_number,insurance_secondary_payer,insurance_secondary_member_number,"
    "emergency_contact_name,emergency_contact_relationship,emergency_contact_phone,status"
)


def ssn(rng):
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def main():
    rows = int(sys.argv[1])
    rng = random.Random(42)
    out = sys.stdout
    out.write(HEADER + "\n")
    for i in range(rows):
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        dob = f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        out.write(
            f"legacy-{i},{given},\"{family}\",{dob},{rng.choice(['female', 'male', 'other', 'unknown'])},"
            f"{ssn(rng)},+1555{rng.randint(1000000, 9999999)},p{i}@example.org,{i} Main St,,Springfield,IL,"
            f"62701,US,Acme Health,XKQ{rng.randint(10**8, 10**9 - 1)},,,Sam {family},spouse,"
            f"+1555{rng.randint(1000000, 9999999)},active\n"
        )


main()
