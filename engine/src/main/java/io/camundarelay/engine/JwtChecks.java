package io.camundarelay.engine;

import com.nimbusds.jose.JOSEObjectType;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.proc.DefaultJOSEObjectTypeVerifier;
import com.nimbusds.jose.proc.JWSVerificationKeySelector;
import com.nimbusds.jose.proc.SecurityContext;
import com.nimbusds.jwt.proc.DefaultJWTProcessor;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Predicate;
import org.springframework.security.oauth2.core.DelegatingOAuth2TokenValidator;
import org.springframework.security.oauth2.core.OAuth2Error;
import org.springframework.security.oauth2.core.OAuth2TokenValidator;
import org.springframework.security.oauth2.core.OAuth2TokenValidatorResult;
import org.springframework.security.oauth2.jwt.Jwt;
import org.springframework.security.oauth2.jwt.JwtClaimNames;
import org.springframework.security.oauth2.jwt.JwtValidators;
import org.springframework.security.oauth2.jwt.NimbusJwtDecoder;

/**
 * What makes a bearer token acceptable to the engine: the checks of {@link JwtAuthentication}.
 *
 * <ul>
 *   <li>the signature: RSA or EC (never HMAC, never {@code none}), by a key of the issuer's JWK
 *       set ({@link IssuerKeys});
 *   <li>the header's {@code typ}, when there is one: {@code JWT}, {@code at+jwt} or {@code
 *       application/at+jwt} (RFC 9068); a logout token's {@code logout+jwt}, say, is refused;
 *   <li>the claim {@code typ}, when there is one (Keycloak writes it): {@code Bearer}, an access
 *       token; Keycloak's ID tokens ({@code ID}) and refresh tokens ({@code Refresh}) carry the
 *       same header, signature and user claims, and are refused by this;
 *   <li>{@code iss} the configured issuer, {@code exp} and {@code nbf} with 60 s of clock skew;
 *   <li>{@code aud} containing {@code CAMUNDA_JWT_AUDIENCE}, when set;
 *   <li>the client the token was issued to, {@code azp} (or RFC 9068's {@code client_id} when
 *       there is no {@code azp}), one of {@code CAMUNDA_JWT_ALLOWED_CLIENTS}, when set.
 * </ul>
 *
 * At least one of the last two is set ({@link StartupCheck}): without either, every token the
 * issuer signs for any of its clients would log in.
 */
final class JwtChecks {

  static final Set<JOSEObjectType> HEADER_TYPES =
      Set.of(
          JOSEObjectType.JWT,
          new JOSEObjectType("at+jwt"),
          new JOSEObjectType("application/at+jwt"));

  private JwtChecks() {}

  /** The client ids of {@code CAMUNDA_JWT_ALLOWED_CLIENTS} (comma-separated, blanks left out). */
  static List<String> clientIds(String setting) {
    return Arrays.stream(setting.split(",")).map(String::trim).filter(id -> !id.isEmpty()).toList();
  }

  /** A decoder checking all of the above against the keys of {@code keys}. */
  static NimbusJwtDecoder decoder(IssuerKeys keys, String audience, List<String> clients) {
    Set<JWSAlgorithm> algorithms = new LinkedHashSet<>(JWSAlgorithm.Family.RSA);
    algorithms.addAll(JWSAlgorithm.Family.EC);
    DefaultJWTProcessor<SecurityContext> processor = new DefaultJWTProcessor<>();
    processor.setJWSKeySelector(new JWSVerificationKeySelector<>(algorithms, keys));
    Set<JOSEObjectType> types = new LinkedHashSet<>(HEADER_TYPES);
    types.add(null); // no typ at all
    processor.setJWSTypeVerifier(new DefaultJOSEObjectTypeVerifier<>(types));
    // The claims are checked by Spring's validators below (their messages are the log's).
    processor.setJWTClaimsSetVerifier((claims, context) -> {});
    NimbusJwtDecoder decoder = new NimbusJwtDecoder(processor);
    decoder.setJwtValidator(validator(keys.issuer(), audience, clients));
    return decoder;
  }

  static OAuth2TokenValidator<Jwt> validator(
      String issuer, String audience, List<String> clients) {
    List<OAuth2TokenValidator<Jwt>> checks = new ArrayList<>();
    checks.add(JwtValidators.createDefaultWithIssuer(issuer));
    checks.add(
        claim(
            "typ",
            typ -> typ == null || "Bearer".equalsIgnoreCase(String.valueOf(typ)),
            "it is not an access token (claim typ)"));
    if (!audience.isEmpty()) {
      checks.add(
          claim(
              JwtClaimNames.AUD,
              aud -> aud instanceof Collection<?> values && values.contains(audience),
              "its audience (aud) is not CAMUNDA_JWT_AUDIENCE"));
    }
    if (!clients.isEmpty()) {
      checks.add(
          jwt -> {
            String client = jwt.getClaimAsString("azp");
            if (client == null) {
              client = jwt.getClaimAsString("client_id");
            }
            return client != null && clients.contains(client)
                ? OAuth2TokenValidatorResult.success()
                : failure("its client (azp) is not one of CAMUNDA_JWT_ALLOWED_CLIENTS");
          });
    }
    return new DelegatingOAuth2TokenValidator<>(checks);
  }

  private static OAuth2TokenValidator<Jwt> claim(
      String name, Predicate<Object> test, String refusal) {
    return jwt ->
        test.test(jwt.getClaims().get(name))
            ? OAuth2TokenValidatorResult.success()
            : failure(refusal);
  }

  private static OAuth2TokenValidatorResult failure(String description) {
    return OAuth2TokenValidatorResult.failure(
        new OAuth2Error("invalid_token", description, null));
  }
}
